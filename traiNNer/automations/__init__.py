"""Training automations: each observes training signals and returns decisions."""
