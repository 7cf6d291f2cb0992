"""How sure is each prediction: parameter uncertainty (priors or a posterior), parameter sets through the batched
solver, and bands (median, 90 % and 95 % intervals) that keep apart parameter uncertainty, between-patient
variability and trial-repeat sampling."""
