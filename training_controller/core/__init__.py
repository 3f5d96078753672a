"""Core logic: the job lifecycle and the use cases. It knows only the ports in `ports.py`."""
