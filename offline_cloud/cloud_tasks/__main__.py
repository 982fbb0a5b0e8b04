"""`python -m offline_cloud.cloud_tasks --port P --admin-port A ...`: see server.main."""

from offline_cloud.cloud_tasks.server import main

main()
