"""Delivery: the plan from channels' capabilities, embargoes and corrections."""
