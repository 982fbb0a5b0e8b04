"""The offline cloud: emulators and stand-ins that the stack, the tests, the demo and the bench run."""

import os

# Every launcher here (the stack, the tests, burst, bench) starts processes with fork + exec from a
# process that also holds gRPC clients (Pub/Sub, Cloud Tasks). gRPC's fork handlers can then
# deadlock inside fork(): a clean-clone test run hung in Popen with the parent in
# cygrpc's atfork hook (grpc/grpc#37259). gRPC documents GRPC_ENABLE_FORK_SUPPORT=false for
# processes that always exec right after fork; it must be set before grpc is imported, and
# importing this package comes first in each launcher.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
