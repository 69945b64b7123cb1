{#- The reconfigure step under salt: renders the same template as the
    native `template:` step of mc-launcher.yml. Salt's pillar here is the
    effective init.sls; PILLAR.sample gives the defaults. #}
{%- set root = salt['environ.get']('MC_ROOT', '/srv') %}
{%- set project = salt['environ.get']('MC_PROJECT', 'example') %}
{%- set project_dir = salt['environ.get']('MC_PROJECT_DIR', root ~ '/projects/' ~ project ~ '/project') %}
{%- set volume = salt['environ.get']('MC_VOLUME', root ~ '/projects/' ~ project ~ '/data') %}
{%- import_yaml 'makina-projects/' ~ project ~ '/PILLAR.sample' as sample %}
{%- set merged = salt['slsutil.merge'](sample, pillar, merge_lists=False) %}
example-app-config:
  file.managed:
    - name: {{ volume }}/configuration/app.json
    - source: salt://makina-projects/{{ project }}/files/app.json.j2
    - template: jinja
    - mode: '0644'
    - context:
        project: {{ project }}
        pillar: {{ merged | json }}
        paths:
          volume: {{ volume }}
          project: {{ project_dir }}
        cgroup:
          cpus: {{ salt['environ.get']('MC_CPUS', '1') | int }}

example-worker-env:
  file.managed:
    - name: {{ volume }}/configuration/worker.env
    - source: salt://makina-projects/{{ project }}/files/worker.env.j2
    - template: jinja
    - mode: '0644'
    - context:
        project: {{ project }}
        pillar: {{ merged | json }}
        paths:
          volume: {{ volume }}
