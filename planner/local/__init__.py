"""A fleet on this machine: local agent processes, the embedded broker, the demo, drills."""
