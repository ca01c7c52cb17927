"""Reports: the review, figures, the PDF and the `ladder` command line."""
