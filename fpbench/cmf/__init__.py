"""The seed paper's CrossModalFingerprinter, SignatureExtractor and their helpers."""
