"""Writing results: adversarial images, perturbations, DICOM, reports, provenance."""
