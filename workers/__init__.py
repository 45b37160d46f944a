"""What starts and runs newsq: the CLI, worker start-up, the embedded mode."""
