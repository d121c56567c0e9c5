"""Incidents: what the rules made of the events, and what people did about them."""
