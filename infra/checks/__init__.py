"""Offline checks of the Terraform in infra/ (see infra/README.md, "Offline checks")."""
