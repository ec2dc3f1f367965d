"""The trust boundary: capabilities derived from workflows, grants by people, secrets, the egress guard."""
