# Bakes a bakery server into an Amazon Machine Image (EC2), starting from
# Canonical's Ubuntu AMI. Non-secret settings come from bakery.auto.pkrvars.hcl;
# credentials only from the usual AWS environment (AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY, or AWS_PROFILE), never from a file in this folder.
# Packer logs in as the admin user that the user-data creates (ssh_username), with
# the SSH key of bakery.yaml: from ssh_private_key_file, or from the running
# ssh-agent when that is empty. The provider's key injection is not used, because
# bakery's user-data defines its own users and keeps root out.

variable "image_name" {
  type    = string
  default = "bakery"
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "source_ami_name" {
  type    = string
  default = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
}

variable "ssh_username" {
  type = string
}

variable "ssh_port" {
  type    = number
  default = 22
}

variable "ssh_private_key_file" {
  type    = string
  default = ""
}

locals {
  # AMI names must be unique per account and region: suffix a UTC timestamp.
  stamp = regex_replace(timestamp(), "[- TZ:]", "")
}

source "amazon-ebs" "bakery" {
  region        = var.region
  instance_type = var.instance_type
  ami_name      = "${var.image_name}-${local.stamp}"

  source_ami_filter {
    filters = {
      name                = var.source_ami_name
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    # Canonical's account: only its images match the Ubuntu name pattern.
    owners      = ["099720109477"]
    most_recent = true
  }

  user_data_file       = "${path.root}/user-data"
  ssh_username         = var.ssh_username
  ssh_port             = var.ssh_port
  ssh_timeout          = "15m"
  ssh_private_key_file = var.ssh_private_key_file == "" ? null : var.ssh_private_key_file
  ssh_agent_auth       = var.ssh_private_key_file == ""

  tags = {
    Name    = var.image_name
    Builder = "bakery"
  }
}

build {
  sources = ["source.amazon-ebs.bakery"]

  provisioner "shell" {
    script = "${path.root}/scripts/wait-for-cloud-init.sh"
  }

  provisioner "shell" {
    environment_vars = ["PACKER_SSH_PUBLIC_KEY=${build.SSHPublicKey}"]
    script           = "${path.root}/scripts/clean-image.sh"
  }
}
