# Bakes a bakery server into a qcow2 disk image with QEMU, for the generic and
# vagrant targets: boots a Debian or Ubuntu cloud image with a NoCloud `cidata`
# CD holding user-data and meta-data, exactly like a seed ISO would.
# Building needs qemu-system-x86_64 and xorriso or genisoimage (for the CD).
# No credentials: Packer logs in as the admin user that the user-data creates
# (ssh_username), with the SSH key of bakery.yaml: from ssh_private_key_file, or
# from the running ssh-agent when that is empty.

variable "image_name" {
  type    = string
  default = "bakery"
}

variable "source_image_url" {
  type    = string
  default = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
}

# No default on purpose: an image is only trusted with a checksum its user chose
# (for example the sha512 line from the SHA512SUMS file beside the image), written
# as "sha512:<hex>". A "file:https://..." form would be fetched when validating.
variable "source_image_checksum" {
  type = string
  validation {
    # Packer 1.6.6 has no regex() here; Packer itself checks the hex digits.
    condition     = (substr(var.source_image_checksum, 0, 7) == "sha256:" && length(var.source_image_checksum) == 71) || (substr(var.source_image_checksum, 0, 7) == "sha512:" && length(var.source_image_checksum) == 135)
    error_message = "The source_image_checksum value must be \"sha256:<64 hex digits>\" or \"sha512:<128 hex digits>\" (from the SHA512SUMS file published beside the image)."
  }
}

variable "disk_size" {
  type    = string
  default = "8G"
}

variable "memory" {
  type    = number
  default = 2048
}

variable "cpus" {
  type    = number
  default = 2
}

# "kvm" where /dev/kvm is usable, "tcg" (software emulation, slower) elsewhere.
variable "accelerator" {
  type    = string
  default = "kvm"
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

source "qemu" "bakery" {
  disk_image   = true
  iso_url      = var.source_image_url
  iso_checksum = var.source_image_checksum

  cd_files = ["${path.root}/user-data", "${path.root}/meta-data"]
  cd_label = "cidata"

  accelerator      = var.accelerator
  memory           = var.memory
  cpus             = var.cpus
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  net_device       = "virtio-net"
  format           = "qcow2"
  disk_compression = true
  headless         = true
  output_directory = "${path.root}/output-${var.image_name}"
  vm_name          = "${var.image_name}.qcow2"

  ssh_username         = var.ssh_username
  ssh_port             = var.ssh_port
  ssh_private_key_file = var.ssh_private_key_file == "" ? null : var.ssh_private_key_file
  ssh_agent_auth       = var.ssh_private_key_file == ""
  ssh_timeout          = "30m"
  shutdown_command     = "sudo -n shutdown -P now"
}

build {
  sources = ["source.qemu.bakery"]

  provisioner "shell" {
    script = "${path.root}/scripts/wait-for-cloud-init.sh"
  }

  provisioner "shell" {
    script = "${path.root}/scripts/clean-image.sh"
  }
}
