"""The package version (single source: hatch reads it from here)."""

VERSION = "0.1.0.dev0"
