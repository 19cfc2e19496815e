"""ImagePipeline: the estate's own images, one per family its pools boot (estate/derive/images.py),
built by EC2 Image Builder from the component documents of estate/derive/image_components.py.

Per family: the components, a recipe (encrypted gp3 root), a distribution that writes the new
image's id to the family's SSM parameter, a pipeline that rebuilds on the stack's schedule, and
one image built at deploy time, so the parameter names a real image of this recipe before any
launch template refers to it. The parameter is created here (holding the parent image until the
first build overwrites it) and then left to Image Builder: Pulumi ignores its value. Shared by
the families of one architecture: an infrastructure configuration (IMDSv2 only, no key pair, in
the runner subnets behind the runners' security group, instances ended on failure); shared by
all: the build instances' role, which may run the SSM agent, read components and write build
logs, and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from estate.config.stack_config import StackConfig
from estate.derive.iam_policies import ec2_assume_role_policy, image_build_policy
from estate.derive.image_components import component_documents
from estate.derive.images import IMAGE_ROOT_DEVICE, ImageFamily, ImagePlan
from lambda_src.core.tags import ENVIRONMENT, IMAGE_FAMILY

COMPONENT_VERSION = "1.0.0"  # a changed document is a new component (auto-named), never a new version of one
IMAGE_BUILD_TIMEOUT = "180m"  # a GPU image: OS updates, driver, toolkit, reboot, pulls, then its test instance


@dataclass(frozen=True)
class ImagePipelineArgs:
    stack: StackConfig
    plan: ImagePlan
    subnet_ids: pulumi.Input[list[str]]  # the runner subnets; builds run in the first
    security_group_id: pulumi.Input[str]  # the runners' group: no ingress
    tags: dict[str, str]


class ImagePipeline(pulumi.ComponentResource):
    parameters: dict[str, str]  # family -> the SSM parameter its launch templates resolve
    parameter_arns: dict[str, pulumi.Output[str]]
    images: dict[str, aws.imagebuilder.Image]  # the deploy-time builds: launch templates wait for them
    pipeline_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ImagePipelineArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:ImagePipeline", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stack, tags = args.stack, args.tags
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id

        role = aws.iam.Role(
            f"{name}-build-role",
            path=f"/runner-estate/{stack.environment}/",
            description=f"runner-estate {stack.environment} image builds",
            assume_role_policy=json.dumps(ec2_assume_role_policy()),
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-build-policy",
            role=role.id,
            policy=account.apply(lambda acct: json.dumps(image_build_policy(stack.region, acct))),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(f"{name}-build-profile", role=role.name, path=role.path, tags=tags, opts=child)

        subnet = pulumi.Output.from_input(args.subnet_ids).apply(lambda ids: ids[0])
        infrastructure = {
            arch: aws.imagebuilder.InfrastructureConfiguration(
                f"{name}-{arch}-infrastructure",
                description=f"runner-estate {stack.environment} {arch} image builds",
                instance_profile_name=profile.name,
                instance_types=list(stack.images.build_instance_types[arch]),  # type: ignore[index]
                subnet_id=subnet,
                security_group_ids=[args.security_group_id],
                terminate_instance_on_failure=True,
                instance_metadata_options=aws.imagebuilder.InfrastructureConfigurationInstanceMetadataOptionsArgs(
                    http_tokens="required", http_put_response_hop_limit=1
                ),
                resource_tags={ENVIRONMENT: stack.environment, IMAGE_FAMILY: arch},
                tags=tags,
                opts=child,
            )
            for arch in sorted({f.architecture for f in args.plan.families})
        }

        self.parameters, self.parameter_arns, self.images, self.pipeline_arns = {}, {}, {}, {}
        for family in args.plan.families:
            self._family(name, family, infrastructure[family.architecture], args, account)
        self.register_outputs({"parameters": self.parameters, "pipelines": self.pipeline_arns})

    def _family(
        self,
        name: str,
        family: ImageFamily,
        infrastructure: aws.imagebuilder.InfrastructureConfiguration,
        args: ImagePipelineArgs,
        account: pulumi.Output[str],
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
        stack, prefix = args.stack, f"{name}-{family.name}"
        tags = {**args.tags, IMAGE_FAMILY: family.name}
        components = [
            aws.imagebuilder.Component(
                f"{prefix}-{doc.step}",
                platform="Linux",
                version=COMPONENT_VERSION,
                description=doc.description,
                data=doc.text,
                tags=tags,
                opts=child,
            )
            for doc in component_documents(family, stack)
        ]
        recipe = aws.imagebuilder.ImageRecipe(
            f"{prefix}-recipe",
            description=f"runner-estate {stack.environment} {family.name}: runner {stack.runner_version}, host programs, Docker"
            + (", NVIDIA driver and toolkit" if family.gpu else ""),
            parent_image=family.parent,
            version=COMPONENT_VERSION,
            components=[aws.imagebuilder.ImageRecipeComponentArgs(component_arn=c.arn) for c in components],
            block_device_mappings=[
                aws.imagebuilder.ImageRecipeBlockDeviceMappingArgs(
                    device_name=IMAGE_ROOT_DEVICE,
                    ebs=aws.imagebuilder.ImageRecipeBlockDeviceMappingEbsArgs(
                        encrypted="true",
                        kms_key_id=stack.images.kms_key,
                        volume_size=family.root_volume_gb,
                        volume_type="gp3",
                        delete_on_termination="true",
                    ),
                )
            ],
            # Ubuntu's SSM agent comes with the image (a snap): kept, for Session Manager on hosts that opt in.
            systems_manager_agent=aws.imagebuilder.ImageRecipeSystemsManagerAgentArgs(uninstall_after_build=False),
            tags=tags,
            opts=child,
        )
        distribution = aws.imagebuilder.DistributionConfiguration(
            f"{prefix}-distribution",
            description=f"runner-estate {stack.environment} {family.name}: private, encrypted, its id to {family.parameter}",
            distributions=[
                aws.imagebuilder.DistributionConfigurationDistributionArgs(
                    region=stack.region,
                    ami_distribution_configuration=aws.imagebuilder.DistributionConfigurationDistributionAmiDistributionConfigurationArgs(
                        name=f"runner-estate-{stack.environment}-{family.name}-{{{{ imagebuilder:buildDate }}}}",
                        description=f"runner-estate {stack.environment} {family.name}",
                        kms_key_id=stack.images.kms_key,
                        ami_tags=tags,
                    ),
                    ssm_parameter_configurations=[
                        aws.imagebuilder.DistributionConfigurationDistributionSsmParameterConfigurationArgs(
                            parameter_name=family.parameter, data_type="aws:ec2:image"
                        )
                    ],
                )
            ],
            tags=tags,
            opts=child,
        )
        # The launch templates resolve this parameter at every launch. It starts as the parent
        # image (aws:ec2:image takes only a real image) and is Image Builder's from the first build.
        parameter = aws.ssm.Parameter(
            f"{prefix}-parameter",
            name=family.parameter,
            description=f"runner-estate {stack.environment}: the newest {family.name} image (written by its image pipeline)",
            type="String",
            data_type="aws:ec2:image",
            value=_parent_image_id(family.parent, self),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["value"]),
        )
        tests = aws.imagebuilder.ImageImageTestsConfigurationArgs(image_tests_enabled=True, timeout_minutes=90)
        image = aws.imagebuilder.Image(
            f"{prefix}-image",
            image_recipe_arn=recipe.arn,
            infrastructure_configuration_arn=infrastructure.arn,
            distribution_configuration_arn=distribution.arn,
            image_tests_configuration=tests,
            enhanced_image_metadata_enabled=True,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[parameter], custom_timeouts=pulumi.CustomTimeouts(create=IMAGE_BUILD_TIMEOUT)
            ),
        )
        pipeline = aws.imagebuilder.ImagePipeline(
            f"{prefix}-pipeline",
            description=f"runner-estate {stack.environment} {family.name}, built {stack.images.schedule} {stack.images.schedule_timezone}",
            image_recipe_arn=recipe.arn,
            infrastructure_configuration_arn=infrastructure.arn,
            distribution_configuration_arn=distribution.arn,
            schedule=aws.imagebuilder.ImagePipelineScheduleArgs(
                schedule_expression=stack.images.schedule,
                timezone=stack.images.schedule_timezone,
                # Every scheduled run builds: OS updates arrive without a new recipe.
                pipeline_execution_start_condition="EXPRESSION_MATCH_ONLY",
            ),
            image_tests_configuration=aws.imagebuilder.ImagePipelineImageTestsConfigurationArgs(
                image_tests_enabled=True, timeout_minutes=90
            ),
            enhanced_image_metadata_enabled=True,
            status="ENABLED",
            tags=tags,
            opts=child,
        )
        self.parameters[family.name] = family.parameter
        self.parameter_arns[family.name] = pulumi.Output.concat("arn:aws:ssm:", stack.region, ":", account, ":parameter", family.parameter)
        self.images[family.name] = image
        self.pipeline_arns[family.name] = pipeline.arn


def _parent_image_id(parent: str, owner: pulumi.Resource) -> pulumi.Input[str]:
    """The parent's image id: given, or read from its public SSM parameter at deploy time."""
    if not parent.startswith("ssm:"):
        return parent
    found = aws.ssm.get_parameter_output(name=parent.removeprefix("ssm:"), opts=pulumi.InvokeOptions(parent=owner))
    return found.insecure_value
