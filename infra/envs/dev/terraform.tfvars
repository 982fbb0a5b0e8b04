# Replace the placeholder project before the first plan.
project_id  = "CHANGE-ME-bgremove-dev"
region      = "europe-west1"
name_prefix = "bgr-dev"
