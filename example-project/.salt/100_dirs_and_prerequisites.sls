{#- Directories and prerequisites of the project. Run at image build time by
    salt (and optionally at start, see mc-launcher.yml's MC_EXAMPLE_SALT). #}
{%- set root = salt['environ.get']('MC_ROOT', '/srv') %}
{%- set project = salt['environ.get']('MC_PROJECT', 'example') %}
{%- set volume = salt['environ.get']('MC_VOLUME', root ~ '/projects/' ~ project ~ '/data') %}
example-dirs:
  file.directory:
    - names:
      - {{ volume }}/configuration
      - {{ volume }}/ssh
    - makedirs: true
