"""The instruction format, the 39 templates and the generator of user-personalised instructions."""
