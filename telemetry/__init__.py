"""Telemetry and alerting daemon for waste and leachate plants."""

__version__ = "0.1.0"
