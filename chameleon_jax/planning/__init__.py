"""The experiment planner (--mode=plan): fingerprint -> config, with reasons.

  facts.py          the dataset as the rules read it; refusals (PlanError)
  machine.py        the machine profile: devices, memory, measured s/GFLOP
  estimate.py       a candidate model's memory and FLOPs, abstractly
  planner_state.py  choices, their reasons, the user's fixed values
  rules.py          rules about the data (scale, canvas, crop, sampling,
                    loss, input, augmentation, decision rule)
  schedule.py       rules about the model, batch and time
  planner.py        the rules in order; plan.json, plan.md, config.py

The composer (components/plan.py) reads the config and the dataset, and
writes the files; nothing here reads a config.
"""
