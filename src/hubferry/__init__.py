"""hubferry: from training data to a published, verified model on the Hugging Face Hub."""
