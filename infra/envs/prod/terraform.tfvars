# Replace the placeholder project before the first plan.
project_id  = "CHANGE-ME-bgremove-prod"
region      = "europe-west1"
name_prefix = "bgr-prod"
