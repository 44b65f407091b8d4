"""Live replays of real traces: choosing a segment, and driving HTTP load through the stable endpoint."""
