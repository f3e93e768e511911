"""`make tables`: Tables I-III, extended tables, figures and index.html, regenerated from stored records alone."""
