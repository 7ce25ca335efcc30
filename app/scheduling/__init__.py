"""Scheduled delivery (send_at) and wait groups: their pure model and the commands on their topics."""
