"""``inference-placement demo``: the command (``cli``), its live trace replay (``live``) and its simulated replay of
the whole trace against every baseline (``simulation``)."""
