# Replace the placeholder project before the first plan.
project_id  = "CHANGE-ME-bgremove-prod"
region      = "europe-west1"
name_prefix = "bgr-prod"

# Low-credit account (6 prediction creates a minute): uncomment.
# submit_queue_max_dispatches_per_second = 0.1
# submit_queue_max_concurrent_dispatches = 2

# Completion events to a customer endpoint as well (add the notify secret's value first,
# infra/README.md): uncomment.
# notify_url = "https://customer.example.com/bgremove-events"

# A spend guard and where alerts go: uncomment and set. A monthly budget needs the submission
# task to outlive the month (submit_queue_max_retry_duration_seconds = 0).
# daily_prediction_budget     = 5000
# monthly_prediction_budget   = 100000
# alert_notification_channels = ["projects/PROJECT_ID/notificationChannels/1234567890"]
