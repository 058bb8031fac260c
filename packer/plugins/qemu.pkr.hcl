# Modern Packer (1.7 and later) installs the qemu plugin with `packer init .`.
# Kept apart from the template because Packer 1.6.6, whose builders are built in,
# cannot parse this block.
packer {
  required_plugins {
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.0.0"
    }
  }
}
