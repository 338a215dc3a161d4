"""Review: the three sign-off stages, their rules and the form in the Prefect UI."""
