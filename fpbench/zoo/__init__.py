"""The zoo: parents, independents and children, built once into a content-addressed store."""
