"""Small example data sets the studio ships (generated, so they are reproducible and free of licences)."""
