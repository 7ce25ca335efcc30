"""The Faust edge: agents keyed by user apply each topic's rules and send effects."""
