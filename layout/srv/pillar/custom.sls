# Image-wide pillar data, merged by salt before the project's pillar.
custom: {}
