"""Test helpers: a seeded fake network and a harness running both cores in virtual time."""
