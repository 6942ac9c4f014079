"""One module per paper method: the loss first, its helpers below."""
