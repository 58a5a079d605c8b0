"""LaDiR: latent diffusion reasoning (Kang et al., ICLR 2026); importing this package registers `ladir`."""
