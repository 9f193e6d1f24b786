"""Where signals come from. Each source runs on its own thread and keeps only the newest data."""
