"""Thin absl entry points: `effv2 <command>`; flags are parsed only here."""
