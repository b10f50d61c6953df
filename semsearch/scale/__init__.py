"""Adapters to distributed engines (batch encoding on Ray). Only the command line's edge imports them."""
