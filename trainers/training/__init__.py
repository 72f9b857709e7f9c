"""Training a CL3M-Rec stage: arguments, stage rules, data and model setup, the Trainer subclass, the run
(train, evaluate, plots, export) and the end-to-end smoke pipeline."""
