"""Config, schedules, run directory, checkpoints, logging and the stage trainer."""
