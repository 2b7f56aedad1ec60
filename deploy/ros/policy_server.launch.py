"""Launch the symgate policy server on a robot with apt ROS 2 Jazzy, configured and activated.

    ros2 launch deploy/ros/policy_server.launch.py params:=deploy/ros/policy_server.yaml

The lifecycle node is configured (model verified against its certificate, first JointState checked)
and then activated; if configure fails the node stays unconfigured and nothing is commanded.
"""

import launch
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def generate_launch_description() -> launch.LaunchDescription:
    """Start policy_server, configure it, and activate it once configured."""
    server = LifecycleNode(
        package="symgate_ros",
        executable="policy_server",
        name="policy_server",
        namespace="",
        output="screen",
        parameters=[LaunchConfiguration("params")],
    )
    configure = EmitEvent(
        event=ChangeState(lifecycle_node_matcher=matches_action(server), transition_id=Transition.TRANSITION_CONFIGURE)
    )
    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=server,
            goal_state="inactive",
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(server), transition_id=Transition.TRANSITION_ACTIVATE
                    )
                )
            ],
        )
    )
    return launch.LaunchDescription(
        [
            DeclareLaunchArgument("params", description="Parameter YAML (deploy/ros/policy_server.yaml)."),
            server,
            activate,
            configure,
        ]
    )
