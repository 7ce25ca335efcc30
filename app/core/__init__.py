"""The pure core every edge shares: the envelope, instants, field validation, keys, refused input."""
