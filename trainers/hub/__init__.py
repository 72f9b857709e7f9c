"""The Hugging Face Hub side of a saved model: its model card and the upload."""
