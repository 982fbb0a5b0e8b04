"""`bgremove`: the operators' command for the background-removal pipeline.

    bgremove [--stack .stack/stack.json | --env dev] status [--watch] [--json]
    bgremove ... backfill gs://BUCKET/PREFIX [--dry-run] [--limit N]
    bgremove ... retry [--reason R] [--older-than 1h] [--limit N] [--dry-run]
    bgremove ... pause | resume
    bgremove ... show gs://BUCKET/NAME[#GENERATION]
    bgremove ... doctor [--yes | --no-prediction] [--webhook-url URL --listen PORT] [--json]

The same code runs against the offline stack and a real project; only the endpoints and the
credentials differ (see target.py). Admission goes through `bgremove.admission.admit`, the function
uploads use, so a backfilled or retried object joins the same submission queue, at the same pace,
under the same filters. This package is never deployed: the functions' archive holds main.py,
bgremove/ and requirements.txt only (infra/checks/packaging.py), and its own requirements are
bgremove_cli/requirements.txt.
"""
