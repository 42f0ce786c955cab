"""Lockgate gateway: wires policy, vault and recorder into SSH and HTTP services."""
