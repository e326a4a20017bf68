"""The policy file: its schema, its loader and the compiled runtime objects."""
