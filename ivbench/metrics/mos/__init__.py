"""MOS speech-quality metrics: DNSMOS, DistillMOS, UTMOS."""
