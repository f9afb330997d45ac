"""What stands in for the world around the daemon, apart from its core: the simulated plant
(``plant``: analyzers on Modbus, weighbridges and a pond on MQTT), the stand-in for the
supervisors' chat robots and mail (``notifications``), a platform-side HJ 212 receiver
(``platform``, also ``telemetry hj212 receiver``), a data acquisition unit that feeds the
daemon's HJ 212 listener (``dau``), and ``telemetry demo`` (``demo``) that
runs them beside the daemon. The daemon never imports these; the demo and the tests do."""
