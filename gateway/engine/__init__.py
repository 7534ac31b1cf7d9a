"""The decision engine: Casbin's semantics answered from memory, and what it is built from."""
