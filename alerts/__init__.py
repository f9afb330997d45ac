"""Rules engine and notification routing."""
