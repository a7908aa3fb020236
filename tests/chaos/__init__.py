"""The chaos suite: faults injected at exact points, processes killed, the server restarted."""
