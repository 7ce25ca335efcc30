"""Avro: the schema registry of `schemas/*.avsc`, single-object encoding, and compiled codecs."""
