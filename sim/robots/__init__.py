"""Robot profiles and URDF kinematics: what symgate knows about any serial arm.

``deploy/robots/<name>/robot.yaml`` profiles are loaded with :func:`sim.robots.profile.load_profile`.
"""
